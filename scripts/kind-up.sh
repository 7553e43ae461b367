#!/usr/bin/env bash
# Build the image, load it into a kind cluster and apply the dev overlay.
#
#   scripts/kind-up.sh            # create the cluster if needed, build, load, apply, wait
#   KIND_CLUSTER=name scripts/kind-up.sh
#
# Needs docker, kind and kubectl. Not run where dispatchd is developed (no Docker engine
# there); the kind-e2e GitHub workflow runs it on every change to deploy/ or the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-dispatchd}
CONTEXT="kind-$CLUSTER"
NAMESPACE=dispatchd
# The dev overlay pins the tag; build exactly that, so nothing is pulled from a registry.
TAG=$(awk '/newTag:/ {print $2; exit}' deploy/overlays/dev/kustomization.yaml)
IMAGE="ghcr.io/dispatchd/dispatchd:${TAG}"

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "kind-up: $tool is required" >&2; exit 1; }
done

echo "kind-up: building $IMAGE"
docker build --tag "$IMAGE" .

if ! kind get clusters | grep -qx "$CLUSTER"; then
    echo "kind-up: creating cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --wait 120s
fi
kind load docker-image "$IMAGE" --name "$CLUSTER"

# A Job's template is immutable: the migration Job is re-created on every apply (Argo CD
# does this itself through the hook's delete policy).
kubectl --context "$CONTEXT" --namespace "$NAMESPACE" delete job dispatchd-migrate --ignore-not-found
kubectl --context "$CONTEXT" create namespace "$NAMESPACE" --dry-run=client -o yaml \
    | kubectl --context "$CONTEXT" apply -f -
kubectl --context "$CONTEXT" apply -k deploy/overlays/dev

echo "kind-up: waiting for the datastores, the migration and the services"
kubectl --context "$CONTEXT" -n "$NAMESPACE" rollout status statefulset/dispatchd-postgres --timeout=300s
kubectl --context "$CONTEXT" -n "$NAMESPACE" rollout status deployment/dispatchd-redis --timeout=300s
kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=complete job/dispatchd-migrate --timeout=300s
for deployment in dispatchd-control-plane dispatchd-worker-gateway dispatchd-scheduler dispatchd-worker; do
    kubectl --context "$CONTEXT" -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout=300s
done

cat <<MSG
kind-up: dispatchd is running in kind cluster '$CLUSTER' (namespace $NAMESPACE).
Reach the control plane with:
  kubectl --context $CONTEXT -n $NAMESPACE port-forward svc/dispatchd-control-plane 50051:50051 &
  dispatchctl submit builtin.echo --payload hello --wait
MSG
