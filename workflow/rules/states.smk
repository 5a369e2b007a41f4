# Stage states: rules are being written (see the issue tracker).
