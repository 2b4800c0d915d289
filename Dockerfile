# Volley's two images, from one multi-stage build:
#
#   docker build --target runner   -t ghcr.io/volley-dev/volley:0.1.0 .           # volley (agent, run, validate)
#   docker build --target operator -t ghcr.io/volley-dev/volley-operator:0.1.0 .  # volley-operator
#
# Both run as the distroless `nonroot` user (uid/gid 65532, matching the pods' securityContext),
# hold one binary each, and need nothing from the filesystem but /tmp (an emptyDir in the pods,
# whose root filesystem is read-only). TLS verification uses the CA bundle distroless ships in
# /etc/ssl/certs.

# ---- build -------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so editing Volley's sources does not rebuild them: build the workspace
# with empty crate roots, then with the real sources.
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY core/Cargo.toml core/
COPY aggregator/Cargo.toml aggregator/
COPY runner/Cargo.toml runner/
COPY operator/Cargo.toml operator/
COPY examples/demo-target/Cargo.toml examples/demo-target/
RUN set -eux; \
    for c in crds core aggregator runner operator examples/demo-target; do \
      mkdir -p "$c/src"; touch "$c/src/lib.rs"; \
    done; \
    for c in runner operator examples/demo-target; do echo 'fn main() {}' > "$c/src/main.rs"; done; \
    mkdir -p aggregator/benches; echo 'fn main() {}' > aggregator/benches/merge.rs; \
    cargo build --release --locked -p volley-runner -p volley-operator || true
COPY . .
RUN touch crds/src/lib.rs core/src/lib.rs aggregator/src/lib.rs runner/src/lib.rs runner/src/main.rs \
          operator/src/lib.rs operator/src/main.rs \
 && cargo build --release --locked -p volley-runner -p volley-operator \
 && install -D -m 0755 target/release/volley /out/volley \
 && install -D -m 0755 target/release/volley-operator /out/volley-operator

# ---- runner: `volley agent` in runner pods -------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runner
COPY --from=build /out/volley /usr/local/bin/volley
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/volley"]
CMD ["--help"]

# ---- operator ----------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/volley-operator /usr/local/bin/volley-operator
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/volley-operator"]
