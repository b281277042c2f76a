"""Storage: SQLAlchemy models, engine set-up and the Alembic migrations that create them."""
