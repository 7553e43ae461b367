#!/bin/sh
# Entrypoint of the dispatchd image: the first argument chooses the program and the rest are
# its own. Without one (or when the first argument is an option) DISPATCHD_SERVICE, set from
# the image's SERVICE build argument, chooses.
#
#   dispatchd control-plane | scheduler | worker-gateway | dashboard | worker | migrate | dispatchctl [ARGS...]
set -eu

usage="usage: dispatchd control-plane | scheduler | worker-gateway | dashboard | worker | migrate | dispatchctl [ARGS...]
(each program answers --help; without a program DISPATCHD_SERVICE chooses)"

case "${1:-}" in
    help) echo "$usage"; exit 0 ;;
    -h | --help) if [ -z "${DISPATCHD_SERVICE:-}" ]; then echo "$usage"; exit 0; fi ;;
esac

case "${1:-}" in
    "" | -*) service=${DISPATCHD_SERVICE:-} ;;
    *) service=$1; shift ;;
esac

case "$service" in
    control-plane | scheduler | worker-gateway | dashboard | worker | migrate)
        exec "dispatchd-$service" "$@" ;;
    dispatchctl)
        exec dispatchctl "$@" ;;
    *)
        echo "dispatchd: unknown service '$service'; use one of: control-plane scheduler worker-gateway dashboard worker migrate dispatchctl" >&2
        exit 64 ;;
esac
