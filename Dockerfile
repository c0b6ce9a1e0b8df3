# hoist as a container, for hosts that run everything through compose (see the `hoist`
# profile in docker-compose.yml). The binary is built outside (`cargo build --release`):
# it is statically linked, carries its own CA roots and SQLite, and so needs nothing
# from an image, not even a shell.
#
#   docker build -t hoist .
#   docker build -t hoist --build-arg HOIST_BINARY=target/x86_64-unknown-linux-gnu/debug/hoist .
#
# Run it with, at the SAME paths on the host and in the container:
#   - the Docker socket (/var/run/docker.sock) and `group_add` the host's docker group id
#     (`getent group docker | cut -d: -f3`): the socket is root:docker 0660 and the
#     container runs as 65532, not root;
#   - state.dir (/var/lib/hoist:/var/lib/hoist), owned by 65532: hoist tells Docker to
#     bind-mount <state.dir>/drain into every managed container, and Docker resolves
#     that path on the host;
#   - the env file's directory (/srv/shop:/srv/shop), writable by 65532;
#   - /etc/hoist (the config) and the secrets at /run/credentials/hoist.service.
FROM scratch

ARG HOIST_BINARY=target/x86_64-unknown-linux-gnu/release/hoist
# /hoist is also the path the HEALTHCHECK runs. The probe looks for drain markers under
# /hoist/cut, which cannot exist here: hoist's own container is never drained.
COPY ${HOIST_BINARY} /hoist

# Nobody: owns no file in the image. Docker access comes only from group_add.
USER 65532:65532
EXPOSE 9480

# GET 127.0.0.1:9480/healthz without a shell or curl. Needs server.listen to include
# loopback (127.0.0.1:9480 or 0.0.0.0:9480).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/hoist", "probe", "--http", "9480/healthz"]

ENTRYPOINT ["/hoist"]
CMD ["serve", "--config", "/etc/hoist/hoist.toml"]
