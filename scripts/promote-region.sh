#!/usr/bin/env bash
# Make REGION the primary region: fence the old primary, promote REGION's Postgres replica,
# record REGION as the primary in that database (bumping the region epoch), then switch the
# region overlays so REGION's services are active and every other region passive.
#
#   scripts/promote-region.sh REGION --database-url URL [--old-database-url URL | --old-primary-fenced] [OVERLAYS_DIR]
#   scripts/promote-region.sh REGION --config-only [OVERLAYS_DIR]        (the overlay edit alone)
#
#   --database-url URL      REGION's database (a streaming replica of the old primary, or already promoted)
#   --old-database-url URL  the old primary's database: fenced first if it answers, else declared unreachable
#   --old-primary-fenced    you fenced the old primary yourself (stopped it, cut it off); nothing is checked
#   OVERLAYS_DIR            default: deploy/overlays
#
# Why the script fences: with two regions and no third-site witness, nothing else can keep the
# old primary from coming back writable (restarted, it is a primary again, and its database
# still names itself). The services' region fence only trusts the database they run on, so the
# old primary must be stopped, or made read-only, before the new one takes writes. If the old
# primary answers, this script makes it read-only (default_transaction_read_only, reloaded)
# and ends its client sessions; if it does not answer, the script says so and goes on: keeping
# it down until it has been rebuilt as a replica of REGION is then your job.
set -euo pipefail

usage() { sed -n '6,8p' "$0" | sed 's/^# *//' >&2; exit 2; }
say() { echo "promote-region: $*"; }
die() { echo "promote-region: $*" >&2; exit 1; }

primary="" new_url="" old_url="" old_fenced=0 config_only=0 overlays=""
while (( $# )); do
    case $1 in
        --database-url) new_url=${2:?}; shift 2 ;;
        --old-database-url) old_url=${2:?}; shift 2 ;;
        --old-primary-fenced) old_fenced=1; shift ;;
        --config-only) config_only=1; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) if [[ -z $primary ]]; then primary=$1; elif [[ -z $overlays ]]; then overlays=$1; else usage; fi; shift ;;
    esac
done
[[ -n $primary ]] || usage
overlays=${overlays:-"$(dirname "$0")/../deploy/overlays"}
[[ $primary =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "promote-region: bad region name '$primary'" >&2; exit 2; }

shopt -s nullglob
envs=("$overlays"/prod-region-*/region.env)
(( ${#envs[@]} > 0 )) || die "no prod-region-*/region.env under $overlays"
region_of() { sed -n 's/^DISPATCHD_REGION=//p' "$1"; }
found=0
for env in "${envs[@]}"; do
    [[ $(region_of "$env") == "$primary" ]] && found=1
done
(( found )) || die "no overlay has DISPATCHD_REGION=$primary"

sql() { PGCONNECT_TIMEOUT=3 "${PSQL:-psql}" -X -q -tA -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

if (( ! config_only )); then
    [[ -n $new_url ]] || die "--database-url is required (or --config-only for the overlay edit alone)"
    [[ -n $old_url || $old_fenced == 1 ]] || die "say how the old primary is fenced: --old-database-url URL or --old-primary-fenced"

    # 1. Fence the old primary.
    if [[ -n $old_url ]]; then
        if sql "$old_url" "SELECT 1" >/dev/null 2>&1; then
            sql "$old_url" "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null
            sql "$old_url" "SELECT pg_reload_conf()" >/dev/null
            sql "$old_url" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                            WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" >/dev/null
            [[ $(sql "$old_url" "SHOW transaction_read_only") == on ]] || die "the old primary did not turn read-only"
            say "1. fenced the old primary: read-only, its client sessions ended (stop it for good, then rebuild it as a replica)"
        else
            say "1. the old primary does not answer: treated as down. Keep it down (it would come back writable) until it is rebuilt as a replica of $primary"
        fi
    else
        say "1. the old primary was fenced by the operator (--old-primary-fenced)"
    fi

    # 2. Promote the replica (pg_ctl promote, as SQL); a server already promoted is left as it is.
    if [[ $(sql "$new_url" "SELECT pg_is_in_recovery()") == t ]]; then
        [[ $(sql "$new_url" "SELECT pg_promote(true, 60)") == t ]] || die "pg_promote did not finish within 60 s"
        say "2. promoted $primary's database to a writable primary"
    else
        say "2. $primary's database is not in recovery (already a primary)"
    fi
    # Its inherited synchronous standby, if any, is usually the server that just failed: commits would hang.
    sql "$new_url" "ALTER SYSTEM RESET synchronous_standby_names" >/dev/null
    sql "$new_url" "SELECT pg_reload_conf()" >/dev/null

    # 3. Record the new primary there; the region epoch grows with every promotion.
    epoch=$(sql "$new_url" "SELECT dispatchd_promote_region('$primary')")
    say "3. recorded $primary as the primary region (region epoch $epoch): its services may write within a second"
fi

# 4. Switch the configuration: REGION active, every other region passive, all naming REGION.
# sed -E into a temporary file: portable across GNU and BSD sed (no -i).
edit() { sed -E "$1" "$2" > "$2.tmp" && mv "$2.tmp" "$2"; }
for env in "${envs[@]}"; do
    dir=$(dirname "$env")
    region=$(region_of "$env")
    if [[ $region == "$primary" ]]; then role=primary; else role=passive; fi
    edit "s/^DISPATCHD_PRIMARY_REGION=.*/DISPATCHD_PRIMARY_REGION=$primary/" "$env"
    edit "s#^([[:space:]]*- \.\./\.\./components/)region-(primary|passive)[[:space:]]*\$#\1region-$role#" "$dir/kustomization.yaml"
    grep -q "components/region-$role\$" "$dir/kustomization.yaml" \
        || die "$dir/kustomization.yaml names no region-* component"
    say "4. $(basename "$dir"): $region is $role"
done

cat <<MSG
promote-region: $primary is the primary region. Next:
  - commit the overlays and sync dispatchd-prod-$primary in Argo CD (its pods roll as active; the
    migration Job runs there); sync the old primary's application too, so it comes back passive;
  - point clients and workers at $primary (DNS / the gateway address they use);
  - rebuild the old primary as a streaming replica of $primary (a fresh pg_basebackup, or pg_rewind
    if it has wal_log_hints or data checksums) before starting it again;
  - replication from $primary is asynchronous until then: once the rebuilt replica streams, set
    synchronous_standby_names on $primary to its application_name again for RPO 0.
MSG
