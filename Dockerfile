# Switchyard and the quick start's sample backend, for the docker compose
# example (examples/docker-compose). The image runs `switchyard`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/switchyard ./cmd/switchyard \
 && CGO_ENABLED=0 go build -trimpath -o /out/backend ./examples/quickstart/backend

FROM alpine:3.20
COPY --from=build /out/switchyard /out/backend /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["switchyard"]
