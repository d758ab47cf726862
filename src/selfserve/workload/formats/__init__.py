"""One reader per public trace format; `selfserve.workload.io` picks one by content."""
