# Stage programs: rules are being written (see the issue tracker).
