"""The engine: plan, run lifecycle, the cell loop, one cell's measurement, executors."""
