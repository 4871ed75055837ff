"""VM mode: replacement hosts whose kernel modules really load (QEMU + Debian's cloud kernel).

- :mod:`persona.vm.image`: image built from Debian packages, cached under /var/cache/persona/vm;
- :mod:`persona.vm.protocol`: the guest agent's framing (pure); :mod:`persona.vm.guest`: its
  shell side; :mod:`persona.vm.qemu`: guests, agent channel, KVM probe;
- :mod:`persona.vm.host`: the lab's VM host; :mod:`persona.vm.capture`: guest -> persona model;
- :mod:`persona.vm.apply`: persona -> replacement guest in plan order, and verification;
- :mod:`persona.vm.provision`: the provisioner protocol and the QEMU provisioner, and the
  end-to-end round trip used by ``persona vm roundtrip`` and the live test.
"""
