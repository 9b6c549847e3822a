#!/usr/bin/env bash
# scripts/run-local's database setup takes values as data, never as SQL: a
# review channel and reviewers holding quotes are stored as given, a
# bad database name is refused, and the optional variables may be unset.
# Runs the script (or $RUN_LOCAL) with AE_LOCAL_SETUP_ONLY=1 against a scratch
# database migrated here with psql, as the worker would, with the debug
# worker binary (built first by scripts/test); builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
run_local=${RUN_LOCAL:-scripts/run-local}
admin=postgres://postgres@127.0.0.1:5432
db=run_local_sql_$$_$RANDOM
trap 'psql -q "$admin/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT

psql -q -v ON_ERROR_STOP=1 "$admin/postgres" -c "CREATE DATABASE $db"
for up in migrations/*.up.sql; do
  single=(--single-transaction)
  [ "$(head -n 1 "$up")" != "-- no-transaction" ] || single=()
  psql -q -v ON_ERROR_STOP=1 "${single[@]}" "$admin/$db" -f "$up" >/dev/null
done

fail() { echo "run_local_sql: $*" >&2; exit 1; }
expect() { # what, query, wanted output
  local got
  got=$(psql -At -v ON_ERROR_STOP=1 "$admin/$db" -c "$2")
  [ "$got" = "$3" ] || fail "$1: got [$got], want [$3]"
}

export AE_SLACK__SIGNING_SECRET=dummy AE_SLACK__BOT_TOKEN=dummy AE_LLM__API_KEY=dummy \
  AE_ACCOUNTING__TOKEN=dummy AE_LOCAL_FIKEN_COMPANY=demo-co AE_LOCAL_SLACK_TEAM=T1 \
  AE_LOCAL_SETUP_ONLY=1 AE_LOCAL_WORKER=${AE_LOCAL_WORKER:-target/debug/worker}
channel="C1');DROP--"
reviewers="U1'||'x, U2',('x" # comma-separated: U1'||'x, U2' and ('x

AE_LOCAL_DATABASE=$db AE_LOCAL_REVIEW_CHANNEL=$channel AE_LOCAL_AUTO_APPROVE_LIMIT_MINOR=500 \
  AE_LOCAL_REVIEWERS=$reviewers bash "$run_local" || fail "run-local failed on quoted values"
expect "tenants" "SELECT count(*) FROM tenants" 1
expect "review channel" "SELECT review_channel FROM tenants" "$channel"
expect "limit" "SELECT auto_approve_limit_minor FROM tenants" 500
expect "company" "SELECT accounting_company FROM tenants" demo-co
expect "reviewers" "SELECT string_agg(platform || ':' || user_id, ' | ' ORDER BY user_id COLLATE \"C\") FROM tenant_reviewers" \
  "slack:('x | slack:U1'||'x | slack:U2' | web:reviewer"

env -u AE_LOCAL_REVIEWERS -u AE_LOCAL_REVIEW_CHANNEL -u AE_LOCAL_AUTO_APPROVE_LIMIT_MINOR \
  AE_LOCAL_DATABASE="$db" bash "$run_local" || fail "run-local failed without the optional values"
expect "reviewers after a run without them" "SELECT count(*) FROM tenant_reviewers" 4

# With nothing set at all: the demo company on the chat page and the sandbox.
env -i PATH="$PATH" HOME="${HOME:-/root}" AE_LOCAL_SETUP_ONLY=1 AE_LOCAL_WORKER="$AE_LOCAL_WORKER" \
  AE_LOCAL_DATABASE="$db" bash "$run_local" || fail "run-local failed with an empty environment"
expect "page route" "SELECT string_agg(platform || ' ' || workspace || ' ' || channel, ', ' ORDER BY platform) FROM tenant_routes" \
  "slack T1 *, web page *"
expect "page member" "SELECT kind || ':' || value FROM tenant_members WHERE platform = 'web'" "user:owner"
expect "page reviews" "SELECT review_channel || ' ' || accounting_company FROM tenants" "web:reviews demo"
out=$(AE_LOCAL_DATABASE="bad-name" bash "$run_local" 2>&1) && fail "a bad database name was accepted"
grep -q "AE_LOCAL_DATABASE must be" <<<"$out" || fail "no clear error for a bad database name: $out"
echo "run_local_sql: ok"
