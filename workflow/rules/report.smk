# Stage report: rules are being written (see the issue tracker).
