"""femnpde.optim."""
