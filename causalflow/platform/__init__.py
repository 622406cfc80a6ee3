"""Everyday experiment work around the core: sample-ratio and A/A checks, planning, monitoring."""
