"""Training: the loop, the step, optimizers, losses and their targets, class weights."""
