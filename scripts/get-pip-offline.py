"""Stands in for get-pip.py, which ansible-test downloads from a host this machine cannot reach.

ansible-test runs it as `python get_pip.py [pip options] pip==X.Y ...` inside a new virtualenv:
bootstrap the pip bundled with Python (ensurepip), then let it install what was asked from PyPI.
ansible-test runs pip with a reduced environment, so the system CA bundle (which the package
proxy's certificate chains to) is also written into the virtualenv's own pip.conf.
"""
import ensurepip
import os
import subprocess
import sys

BOOTSTRAP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

if os.path.exists(SYSTEM_CA_BUNDLE):
    with open(os.path.join(sys.prefix, "pip.conf"), "w") as config:
        config.write("[global]\ncert = %s\n" % SYSTEM_CA_BUNDLE)
ensurepip.bootstrap(upgrade=True)
os.environ.pop("PIP_CONFIG_FILE", None)  # ensurepip points it at /dev/null; pip needs the config back
requested = [argument for argument in sys.argv[1:] if argument not in BOOTSTRAP_ONLY_OPTIONS]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet"] + requested))
