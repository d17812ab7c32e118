"""Evaluation: confusion metrics, the evaluation pass, and its reports."""
