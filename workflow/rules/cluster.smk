# Stage cluster: rules are being written (see the issue tracker).
