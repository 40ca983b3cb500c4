"""Cloud-init templates and scripts for pool servers, installed as the package
``blitzclawd_cloudinit`` (package data read by blitzclawd.fleet.cloudinit). No code lives here."""
