"""StABlE training: Boltzmann-estimator gradients, training observables and the StABlE loop."""
