#!/usr/bin/env bash
# Make REGION the primary: rewrite every production region overlay so REGION accepts
# mutations and every other region is passive, all naming REGION as the primary.
#
#   scripts/promote-region.sh region-b [OVERLAYS_DIR]     (default: deploy/overlays)
#
# It only edits files (region.env and the region-primary/region-passive component line of each
# deploy/overlays/prod-region-*/kustomization.yaml); review, commit and let Argo CD sync:
#
#   1. Sync the old primary first: it turns passive (reads only, no leader, no workers).
#      Do this even if that region is down, so it comes back passive.
#   2. Promote the new primary's Postgres replica to a writable primary (your database's
#      failover; DATABASE_URL of the new primary must then point at it).
#   3. Sync the new primary: it accepts mutations, its scheduler leads and re-queues whatever
#      Postgres says is due, its gateway takes workers; the migration Job runs there again.
#
# A region that allows mutations without being the primary refuses to start, so a half-applied
# promotion cannot leave two writers.
set -euo pipefail

usage() { echo "usage: $0 REGION [OVERLAYS_DIR]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
primary=$1
overlays=${2:-"$(dirname "$0")/../deploy/overlays"}
[[ $primary =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "promote-region: bad region name '$primary'" >&2; exit 2; }

shopt -s nullglob
envs=("$overlays"/prod-region-*/region.env)
(( ${#envs[@]} > 0 )) || { echo "promote-region: no prod-region-*/region.env under $overlays" >&2; exit 1; }

region_of() { sed -n 's/^DISPATCHD_REGION=//p' "$1"; }
# sed -E into a temporary file: portable across GNU and BSD sed (no -i).
edit() { sed -E "$1" "$2" > "$2.tmp" && mv "$2.tmp" "$2"; }

found=0
for env in "${envs[@]}"; do
    [[ $(region_of "$env") == "$primary" ]] && found=1
done
(( found )) || { echo "promote-region: no overlay has DISPATCHD_REGION=$primary" >&2; exit 1; }

for env in "${envs[@]}"; do
    dir=$(dirname "$env")
    region=$(region_of "$env")
    if [[ $region == "$primary" ]]; then role=primary; else role=passive; fi
    edit "s/^DISPATCHD_PRIMARY_REGION=.*/DISPATCHD_PRIMARY_REGION=$primary/" "$env"
    edit "s#^([[:space:]]*- \.\./\.\./components/)region-(primary|passive)[[:space:]]*\$#\1region-$role#" "$dir/kustomization.yaml"
    grep -q "components/region-$role\$" "$dir/kustomization.yaml" \
        || { echo "promote-region: $dir/kustomization.yaml names no region-* component" >&2; exit 1; }
    echo "promote-region: $(basename "$dir"): $region is $role"
done

cat <<MSG
promote-region: $primary is now the primary in the manifests. Commit, then in Argo CD:
  1. sync the old primary's application (it turns passive),
  2. promote $primary's Postgres replica to a writable primary,
  3. sync dispatchd-prod-$primary.
MSG
