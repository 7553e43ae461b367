"""The container image built and run on this machine with buildah (`make image`, `make image-test`).

- `Buildah` (buildah): the commands, one storage driver, working containers that clean up.
- `leaks` (contents): what the build borrowed from this machine and must not ship.
- `ImagePlatform` (platform): migrate, services and a worker run from the image.
- `smoke`: the `make image-test` program and its evidence.
"""
