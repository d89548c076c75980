"""The lowest floor: user-facing errors, timing regions, safe torch loading (imports nothing of ours)."""
