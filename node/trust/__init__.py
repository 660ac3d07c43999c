"""Who may take part: node identity, the cluster CA, certificates, enrolment, revocation."""
