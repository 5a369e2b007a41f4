# Stage fetch: rules are being written (see the issue tracker).
