# Stage gate: rules are being written (see the issue tracker).
