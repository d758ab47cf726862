"""Traffic: `Request` records, trace readers and writers, generators, transforms, analysis.

Knows nothing about replicas or policies."""

from selfserve.workload.request import MediaKind, MediaPart, Request, Workload

__all__ = ["MediaKind", "MediaPart", "Request", "Workload"]
