#!/usr/bin/env bash
# services.sh starts and stops the servers that tests and `make db` use:
#
#   services.sh start [redis] [pglite]   start them (both by default)
#   services.sh stop                     stop what this script started
#   services.sh env                      print the URLs as shell exports
#
# Ports are off the standard ones so a developer's own Redis/PostgreSQL are
# never touched: Redis on $MLSERVE_TEST_REDIS_PORT (56379), PGlite with
# pgvector, pg_trgm and unaccent (OCR search; see search/README.md) on
# $MLSERVE_TEST_PG_PORT (55432). State (pid files, logs) lives
# in $MLSERVE_SERVICES_DIR (default .deps/run/); PGlite data in
# $MLSERVE_PGLITE_DATA (default: in memory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${MLSERVE_SERVICES_DIR:-${MLSERVE_DEPS_DIR:-$ROOT/.deps}/run}"
REDIS_PORT="${MLSERVE_TEST_REDIS_PORT:-56379}"
PG_PORT="${MLSERVE_TEST_PG_PORT:-55432}"
PG_DATA="${MLSERVE_PGLITE_DATA:-memory://}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_redis() {
	mkdir -p "$RUN/redis"
	if alive "$RUN/redis/redis.pid"; then return; fi
	command -v redis-server >/dev/null || die "redis-server not installed (run scripts/setup.sh)"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
		--save '' --appendonly no --dir "$RUN/redis" \
		--pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log" >/dev/null
	for _ in $(seq 1 100); do
		if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
			log "redis on 127.0.0.1:$REDIS_PORT"
			return
		fi
		sleep 0.1
	done
	die "redis did not start; see $RUN/redis/redis.log"
}

start_pglite() {
	mkdir -p "$RUN/pglite"
	if alive "$RUN/pglite/pglite.pid"; then return; fi
	local server="$ROOT/scripts/pglite/node_modules/@electric-sql/pglite-socket/dist/scripts/server.js"
	[[ -f "$server" ]] || die "PGlite not installed (run scripts/setup.sh)"
	if [[ "$PG_DATA" != memory://* ]]; then mkdir -p "$PG_DATA"; fi
	# setsid: the server outlives this script and gets its own process group,
	# so `stop` can end it cleanly. -e loads extensions into the server:
	# package:export, or a bare name from @electric-sql/pglite/contrib/.
	setsid node "$server" --db="$PG_DATA" --host=127.0.0.1 --port="$PG_PORT" \
		-e @electric-sql/pglite-pgvector:vector,pg_trgm,unaccent -m 8 \
		>"$RUN/pglite/pglite.log" 2>&1 </dev/null &
	echo $! >"$RUN/pglite/pglite.pid"
	for _ in $(seq 1 300); do
		if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
			log "pglite (PostgreSQL + pgvector, pg_trgm, unaccent) on 127.0.0.1:$PG_PORT, data $PG_DATA"
			return
		fi
		alive "$RUN/pglite/pglite.pid" || break
		sleep 0.1
	done
	cat "$RUN/pglite/pglite.log" >&2 || true
	die "pglite did not start"
}

stop_pid() {
	local pidfile="$1" sig="$2" name="$3"
	if alive "$pidfile"; then
		local pid
		pid="$(cat "$pidfile")"
		kill "-$sig" "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		log "stopped $name"
	fi
	rm -f "$pidfile"
}

cmd="${1:-}"
shift || true
case "$cmd" in
start)
	what=("$@")
	if [[ ${#what[@]} == 0 ]]; then what=(redis pglite); fi
	for w in "${what[@]}"; do
		case "$w" in
		redis) start_redis ;;
		pglite) start_pglite ;;
		*) die "unknown service $w" ;;
		esac
	done
	;;
stop)
	stop_pid "$RUN/pglite/pglite.pid" INT pglite
	stop_pid "$RUN/redis/redis.pid" TERM redis
	;;
env)
	echo "export MLSERVE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
	echo "export MLSERVE_TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
	;;
*)
	echo "usage: $0 start [redis] [pglite] | stop | env" >&2
	exit 2
	;;
esac
