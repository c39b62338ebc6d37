"""The storage SCP: C-STORE in, a stored object and a queued message out."""
