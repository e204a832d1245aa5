"""Evaluation: clustering costs, the comparison with MLlib KMeans and scikit-learn,
reports and plots. Imports core, spark, ml and tables, never lifecycle or app."""
