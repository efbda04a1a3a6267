"""Real virtual machines on Debian 12's stock kernel: a debootstrap image, booted N times with qemu on
taps joined to a lab bridge (`python -m tests.vm build | up --guests N | down | status`)."""
