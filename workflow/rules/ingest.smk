# Stage ingest: rules are being written (see the issue tracker).
