"""Why the model made its call: counterfactuals and saliency (evidence), and their picture (plot)."""
