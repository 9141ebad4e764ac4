"""femnpde.io."""
