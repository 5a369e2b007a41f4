# Stage trajectory: rules are being written (see the issue tracker).
