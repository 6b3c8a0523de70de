"""The job contract shared by service/ and workers/: options schema, scan references, job states, settings."""
