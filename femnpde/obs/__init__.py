"""femnpde.obs."""
