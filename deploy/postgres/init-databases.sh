#!/bin/bash
# One database per Adgang service (see docs/architecture.md: each service is the only writer of
# its own database). The postgres image runs this once, when it initialises an empty data
# directory, as $POSTGRES_USER; the databases are owned by that user.
set -euo pipefail

for database in onboarding identity billing notifier portal; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -c "CREATE DATABASE \"${database}\" OWNER \"${POSTGRES_USER}\";"
done
