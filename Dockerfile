# syntax=docker/dockerfile:1
# notifyd: a static binary in a minimal, non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/notifyd ./cmd/notifyd
# The shard volume's mount point, owned by the image's user: a new named
# volume takes this ownership, so a store (or `notifyd sandbox`) running as
# nonroot can write into it.
RUN mkdir -p /out/var/lib/notifyd

# distroless/static: no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notifyd /usr/local/bin/notifyd
COPY notifyd.example.yaml /etc/notifyd/notifyd.example.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/notifyd /var/lib/notifyd
USER nonroot:nonroot
# The co-located store publishes its shard file into this volume (notifyd
# mounts it read-only). The config is mounted at /etc/notifyd/notifyd.yaml
# (see docker-compose.yml and deploy/compose.production.yaml).
VOLUME ["/var/lib/notifyd"]
EXPOSE 8080
ENV NOTIFYD_ADDR=http://127.0.0.1:8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/notifyd", "health"]
ENTRYPOINT ["/usr/local/bin/notifyd"]
CMD ["serve", "--config", "/etc/notifyd/notifyd.yaml"]
