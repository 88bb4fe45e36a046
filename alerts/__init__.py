"""newsmon alerts: topic matching, channels and digests (issue 4)."""
