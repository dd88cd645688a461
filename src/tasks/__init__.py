"""LightningModules, one per task kind; a data set's config chooses its kind."""
