# Stage qc: rules are being written (see the issue tracker).
