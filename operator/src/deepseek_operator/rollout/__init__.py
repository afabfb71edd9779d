"""Progressive delivery: revisions, analysis, decisions."""
