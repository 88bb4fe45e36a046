"""newsmon monitor: configuration, scheduling, fetching, extraction and state."""
