"""The shared ground every layer stands on: errors, hints, the results format, statistics."""
