"""femnpde.fem."""
