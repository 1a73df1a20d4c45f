# syntax=docker/dockerfile:1
# Build: a static notifyd binary.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/notifyd ./cmd/notifyd

# Run: distroless static, non-root. The shard file is shared with the co-located
# store through a read-only volume mounted at /var/lib/notifyd.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notifyd /usr/local/bin/notifyd
USER nonroot:nonroot
VOLUME ["/var/lib/notifyd"]
ENTRYPOINT ["/usr/local/bin/notifyd"]
CMD ["--help"]
