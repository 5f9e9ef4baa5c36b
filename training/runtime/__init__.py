"""Runtime plumbing shared by every stage: device and precision, distributed processes, atomic writes, optimizers."""
