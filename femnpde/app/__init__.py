"""femnpde.app."""
