"""Wire dialects: each translates its JSON into core types and core events back into its JSON."""
