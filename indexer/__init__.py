"""newsmon indexer: embedding, vector store, near-duplicates/stories and search (issue 3)."""
