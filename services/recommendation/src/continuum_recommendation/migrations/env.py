from alembic import context

from continuum_runtime.migrations import run_migrations_online

run_migrations_online(context)
