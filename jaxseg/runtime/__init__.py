"""Run-time services every job uses: device mesh, processes, dtype policy, variables,
checkpoints, files and logging. Imports nothing above jaxseg.models."""
