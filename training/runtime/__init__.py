"""Runtime plumbing shared by every stage: device and precision, thread defaults, progress,
distributed processes, atomic writes, optimizers."""
