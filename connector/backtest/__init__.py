"""Backtest: does the health score predict churn?"""
